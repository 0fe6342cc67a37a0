import SwiftLeakCore
import Testing
import SwiftLeakTestSupport

@testable import SwiftLeakModel

@Suite("Live block table")
struct LiveBlockTableTests {
    static func block(_ address: UInt64, size: UInt64 = 16, stack: UInt32 = 1) -> LiveBlock {
        LiveBlock(address: address, size: size, stack: stack, function: .malloc, moduleGeneration: 0)
    }

    @Test("insert, look up, remove")
    func basics() {
        var table = LiveBlockTable(minimumCapacity: 16)
        #expect(table.insert(Self.block(0x1000, size: 40)) == nil)
        #expect(table.lookup(0x1000)?.size == 40)
        #expect(table.count == 1)
        #expect(table.totalBytes == 40)
        #expect(table.remove(0x1000)?.size == 40)
        #expect(table.lookup(0x1000) == nil)
        #expect(table.remove(0x1000) == nil)
        #expect(table.count == 0)
        #expect(table.totalBytes == 0)
    }

    @Test("an allocation at a live address replaces the block and says so")
    func replace() {
        var table = LiveBlockTable()
        table.insert(Self.block(0x2000, size: 8))
        let old = table.insert(Self.block(0x2000, size: 24, stack: 7))
        #expect(old?.size == 8)
        #expect(table.lookup(0x2000)?.stack == 7)
        #expect(table.totalBytes == 24)
        #expect(table.count == 1)
    }

    @Test("fields survive packing: 48-bit sizes, every function, module generation")
    func packing() {
        var table = LiveBlockTable()
        let big = LiveBlock(address: 0x7f00_0000_1000, size: (1 << 48) - 1, stack: .max,
                            function: .operatorNewArrayAlignedNothrow, moduleGeneration: 200)
        table.insert(big)
        #expect(table.lookup(big.address) == big)
    }

    /// Random inserts and removes against a Dictionary model, through many grows and
    /// backward-shift deletions in long probe runs (addresses 16 bytes apart, as malloc gives).
    @Test("agrees with a dictionary under random operations")
    func modelCheck() {
        var table = LiveBlockTable(minimumCapacity: 16)
        var model: [UInt64: UInt64] = [:]
        var rng = SplitMix(seed: 42)
        for step in 0..<200_000 {
            let address = 0x5555_0000_0000 + (rng.next() % 50_000) * 16
            if rng.next() % 3 == 0 {
                #expect(table.remove(address)?.size == model.removeValue(forKey: address))
            } else {
                // Now and then a block too big for a slot (the side dictionary), at an address
                // that may have held an ordinary one, and back.
                let size = rng.next() % 50 == 0 ? (1 << 32) + rng.next() % 1000 : rng.next() % 1000
                table.insert(Self.block(address, size: size))
                model[address] = size
            }
            if step % 20_000 == 0 {
                #expect(table.count == model.count)
            }
        }
        #expect(table.count == model.count)
        #expect(table.totalBytes == model.values.reduce(0, +))
        for (address, size) in model {
            #expect(table.lookup(address)?.size == size)
        }
        #expect(Set(table.allBlocks().map(\.address)) == Set(model.keys))
    }

    @Test("consumeSorted hands over every block sorted by address and empties the table")
    func consumeSorted() {
        var table = LiveBlockTable(minimumCapacity: 16)
        var rng = SplitMix(seed: 7)
        var model: [UInt64: LiveBlock] = [:]
        for _ in 0..<100_000 {
            let address = 0x7f00_0000_0000 + (rng.next() % 10_000_000) * 16
            let block = LiveBlock(address: address, size: rng.next() % 5000, stack: UInt32(rng.next() % 1000),
                                  function: AllocationFunction(rawValue: UInt8(rng.next() % 20 + 1)),
                                  moduleGeneration: UInt8(rng.next() % 3))
            table.insert(block)
            model[address] = block
        }
        let sorted = table.consumeSorted()
        #expect(table.count == 0)
        #expect(sorted.count == model.count)
        #expect(sorted.addresses == model.keys.sorted())
        // More blocks than ParallelSort.twoThreadMinimum: both threads' halves carry their fields.
        #expect(sorted.count > 1 << 16)
        #expect((0..<sorted.count).allSatisfy { sorted[$0] == model[sorted.addresses[$0]] })
    }

    @Test("sorting handles the edge sizes", arguments: [0, 1, 2, 16, 17, 18, 1000, 65_535, 65_536, 70_000])
    func sortSizes(count: Int) {
        let blocks = (0..<count).reversed().map { Self.block(UInt64($0 + 1) * 16, size: UInt64($0)) }
        let sorted = SortedBlocks(blocks)
        #expect(sorted.addresses == (0..<count).map { UInt64($0 + 1) * 16 })
        #expect((0..<count).allSatisfy { sorted.size($0) == UInt64($0) })
    }

    /// Key layouts that steer the radix sort's digits: a heap and a far mmap region (one pass
    /// leaves nearly every block in one part, which the two-thread split must refine), keys that
    /// differ only in their low bits, keys over the whole 64-bit range (forged addresses), runs
    /// around the insertion-sort and two-thread limits.
    @Test("the address sort orders every layout and carries each block's fields and number",
          arguments: ["heap and mmap", "low bits only", "full range", "one heap, a few far", "dense runs"])
    func sortLayouts(layout: String) {
        var rng = SplitMix(seed: UInt64(layout.utf8.count))
        var keys = Set<UInt64>()
        let count = layout == "dense runs" ? 3 * ParallelSort.twoThreadMinimum / 2 : 90_000
        while keys.count < count {
            let r = rng.next()
            switch layout {
            case "heap and mmap":
                keys.insert(r % 3 == 0 ? 0x7f12_3400_0000 + (r >> 8) % 40_000_000 * 16
                                       : 0x5555_5555_0000 + (r >> 8) % 40_000_000 * 16)
            case "low bits only": keys.insert(0x5555_0000_0000 | (r & 0x1_ffff))
            case "full range": keys.insert(r | 1)
            case "one heap, a few far":
                keys.insert(keys.count % 20_000 == 0 ? 0x7ffd_0000_0000 + r % 1000 * 16 : 0x5555_0000_0000 + r % 10_000_000 * 16)
            default:
                // Runs of consecutive blocks, sizes around the insertion limit, far apart.
                let run = Int(r % UInt64(2 * ParallelSort.insertionMaximum + 3)) + 1
                let base = 0x5555_0000_0000 + (r >> 16) % 1_000_000_000 * 4096
                for index in 0..<run { keys.insert(base + UInt64(index) * 32) }
            }
        }
        var table = LiveBlockTable(minimumCapacity: 16)
        table.startNumbering()
        var model: [UInt64: (size: UInt64, stack: UInt32, number: UInt64)] = [:]
        for (step, key) in keys.enumerated() {
            let size = rng.next() % 5000, stack = UInt32(truncatingIfNeeded: rng.next() % 100_000)
            var replaced: UInt64 = 0
            _ = table.insert(Self.block(key, size: size, stack: stack), number: UInt64(step + 1), replacedNumber: &replaced)
            model[key] = (size, stack, UInt64(step + 1))
        }
        let sorted = table.consumeSorted()
        #expect(sorted.addresses == keys.sorted())
        #expect((0..<sorted.count).allSatisfy {
            let expected = model[sorted.addresses[$0]]!
            return sorted.size($0) == expected.size && sorted.stacks[$0] == expected.stack && sorted.numbers[$0] == expected.number
        })
    }

    @Test("memory stays at most 26 bytes per live block plus 16 KiB, at every count (no grow doubles it)")
    func footprint() {
        var table = LiveBlockTable(minimumCapacity: 16)
        var worst = 0.0
        for index in 0..<300_000 {
            table.insert(Self.block(0x1000 + UInt64(index) * 32))
            let perBlock = Double(table.memoryFootprint - 16 << 10) / Double(table.count)
            if table.count > 4096 { worst = max(worst, perBlock) }
        }
        #expect(worst <= 26, "worst \(worst) bytes a block")
        // Removing everything keeps the table valid (backward shifts across the shards' ends).
        for index in 0..<300_000 { #expect(table.remove(0x1000 + UInt64(index) * 32) != nil) }
        #expect(table.count == 0 && table.totalBytes == 0)
    }

    @Test("blocks that do not fit a slot: addresses above 2^48, sizes of 4 GiB and more")
    func oversized() {
        var table = LiveBlockTable()
        let high = LiveBlock(address: 0x00ff_0000_0000_1000, size: 32, stack: 3, function: .calloc, moduleGeneration: 1)
        let huge = LiveBlock(address: 0x7f00_0000_2000, size: 5 << 30, stack: 4, function: .malloc, moduleGeneration: 0)
        table.insert(high)
        table.insert(huge)
        #expect(table.lookup(high.address) == high)
        #expect(table.lookup(huge.address) == huge)
        #expect(table.count == 2 && table.totalBytes == 32 + 5 << 30)
        // A small block at the huge one's address replaces it (and says so), and back.
        let small = Self.block(huge.address, size: 48)
        #expect(table.insert(small) == huge)
        #expect(table.count == 2 && table.totalBytes == 32 + 48)
        #expect(table.insert(huge) == small)
        #expect(table.count == 2 && table.totalBytes == 32 + 5 << 30)
        let sorted = table.consumeSorted()
        #expect(sorted.addresses == [huge.address, high.address])
        #expect(sorted[0] == huge && sorted[1] == high)
    }

    @Test("a copy of the table is independent of the original (copy on write)")
    func copyOnWrite() {
        var table = LiveBlockTable()
        table.insert(Self.block(0x1000))
        var copy = table
        copy.insert(Self.block(0x2000))
        #expect(table.remove(0x1000) != nil)
        #expect(table.count == 0 && copy.count == 2)
        #expect(copy.lookup(0x1000) != nil && table.lookup(0x2000) == nil)
    }

    /// A numbered table (the trace's allocation numbers) against a dictionary, through grows,
    /// backward shifts, replacements and blocks in the side dictionary.
    @Test("a numbered table keeps each block's number through grows, shifts and replacements")
    func numbered() {
        var table = LiveBlockTable(minimumCapacity: 16)
        table.startNumbering()
        #expect(table.isNumbered)
        var model: [UInt64: (size: UInt64, number: UInt64)] = [:]
        var rng = SplitMix(seed: 9)
        for step in 1...200_000 {
            let address = 0x5555_0000_0000 + (rng.next() % 30_000) * 16
            if rng.next() % 3 == 0 {
                var number: UInt64 = 99
                let removed = table.remove(address, number: &number)
                let expected = model.removeValue(forKey: address)
                #expect(removed?.size == expected?.size)
                #expect(number == (expected?.number ?? 99))
            } else {
                let size = rng.next() % 60 == 0 ? (1 << 32) + rng.next() % 1000 : rng.next() % 1000
                var replacedNumber: UInt64 = 0
                let replaced = table.insert(Self.block(address, size: size), number: UInt64(step), replacedNumber: &replacedNumber)
                #expect(replaced?.size == model[address]?.size)
                #expect(replacedNumber == (model[address]?.number ?? 0))
                model[address] = (size, UInt64(step))
            }
        }
        #expect(table.count == model.count)
        for (address, entry) in model.prefix(2000) { #expect(table.number(of: address) == entry.number) }
        table.renumber(model.keys.first!, to: 7)
        model[model.keys.first!]!.number = 7
        let copy = table
        let sorted = table.consumeSorted()
        #expect(sorted.addresses == model.keys.sorted())
        #expect(sorted.numbers == sorted.addresses.map { model[$0]!.number })
        #expect((0..<sorted.count).allSatisfy { sorted.size($0) == model[sorted.addresses[$0]]!.size })
        // The copy taken before kept its own numbers.
        #expect(copy.number(of: sorted.addresses[0]) == sorted.numbers[0])
    }

    @Test("a numbered table big enough for the two-thread sort keeps every block's number and fields")
    func numberedTwoThreadSort() {
        var table = LiveBlockTable(minimumCapacity: 16)
        table.startNumbering()
        var rng = SplitMix(seed: 11)
        var model: [UInt64: (size: UInt64, number: UInt64)] = [:]
        for step in 1...100_000 {
            let address = 0x5555_0000_0000 + (rng.next() % 50_000_000) * 16
            var replacedNumber: UInt64 = 0
            let size = rng.next() % 1000
            _ = table.insert(Self.block(address, size: size), number: UInt64(step), replacedNumber: &replacedNumber)
            model[address] = (size, UInt64(step))
        }
        let sorted = table.consumeSorted()
        #expect(sorted.count > 1 << 16)
        #expect(sorted.addresses == model.keys.sorted())
        #expect(sorted.numbers == sorted.addresses.map { model[$0]!.number })
        #expect((0..<sorted.count).allSatisfy { sorted.size($0) == model[sorted.addresses[$0]]!.size })
    }

    @Test("shards that grow in place (mapped, 64 KiB and more) keep every block, its fields and its number",
          arguments: [false, true])
    func growInPlace(numbered: Bool) {
        var table = LiveBlockTable(minimumCapacity: 16)
        if numbered { table.startNumbering() }
        var rng = SplitMix(seed: numbered ? 13 : 12)
        var model: [UInt64: (size: UInt64, stack: UInt32, number: UInt64)] = [:]
        var live: [UInt64] = []
        for step in 1...600_000 {
            if step % 4 == 0, !live.isEmpty {
                // Removals in between, so the grows meet the holes backward shifts leave.
                let index = Int(rng.next() % UInt64(live.count))
                let address = live[index]
                live.swapAt(index, live.count - 1)
                live.removeLast()
                var number: UInt64 = 99
                #expect(table.remove(address, number: &number)?.size == model[address]!.size)
                #expect(number == (numbered ? model[address]!.number : 0))
                model[address] = nil
                continue
            }
            let address = 0x1000 + (rng.next() % (1 << 36)) * 16
            let size = rng.next() % 4000, stack = UInt32(truncatingIfNeeded: rng.next())
            var replacedNumber: UInt64 = 0
            let replaced = table.insert(Self.block(address, size: size, stack: stack), number: UInt64(step),
                                        replacedNumber: &replacedNumber)
            #expect(replaced?.size == model[address]?.size)
            if model[address] == nil { live.append(address) }
            model[address] = (size, stack, UInt64(step))
        }
        // Shards of 4096 two-word slots and more are mapped.
        #expect(table.capacity >= 64 * 4096)
        #expect(table.count == model.count)
        #expect(table.totalBytes == model.values.reduce(0) { $0 + $1.size })
        for address in live.prefix(20_000) {
            let block = table.lookup(address)
            #expect(block?.size == model[address]!.size && block?.stack == model[address]!.stack)
            #expect(table.number(of: address) == (numbered ? model[address]!.number : 0))
        }
        let sorted = table.consumeSorted()
        #expect(sorted.addresses == model.keys.sorted())
        #expect((0..<sorted.count).allSatisfy {
            sorted.size($0) == model[sorted.addresses[$0]]!.size && sorted.stacks[$0] == model[sorted.addresses[$0]]!.stack
        })
        if numbered { #expect(sorted.numbers == sorted.addresses.map { model[$0]!.number }) }
    }

    @Test("numbering a table that holds blocks gives them 0; a table not numbered keeps none")
    func startNumberingLate() {
        var plain = LiveBlockTable()
        var replacedNumber: UInt64 = 5
        plain.insert(Self.block(0x1000), number: 3, replacedNumber: &replacedNumber)
        #expect(plain.number(of: 0x1000) == 0)
        #expect(plain.consumeSorted().numbers.isEmpty)

        var table = LiveBlockTable()
        table.startNumbering()
        table.insert(Self.block(0x1000), number: 3, replacedNumber: &replacedNumber)
        table.insert(Self.block(0x7f00_0000_2000, size: 5 << 30), number: 4, replacedNumber: &replacedNumber)
        var child = table
        child.startNumbering()
        #expect(child.number(of: 0x1000) == 0 && child.number(of: 0x7f00_0000_2000) == 0)
        #expect(table.number(of: 0x1000) == 3 && table.number(of: 0x7f00_0000_2000) == 4)
        var number: UInt64 = 9
        #expect(child.remove(0x1000, number: &number) != nil && number == 0)
    }

    @Test("a numbered table stays at most 39 bytes per live block plus 16 KiB")
    func numberedFootprint() {
        var table = LiveBlockTable(minimumCapacity: 16)
        table.startNumbering()
        var worst = 0.0
        var replacedNumber: UInt64 = 0
        for index in 0..<300_000 {
            table.insert(Self.block(0x1000 + UInt64(index) * 32), number: UInt64(index + 1), replacedNumber: &replacedNumber)
            let perBlock = Double(table.memoryFootprint - 16 << 10) / Double(table.count)
            if table.count > 4096 { worst = max(worst, perBlock) }
        }
        #expect(worst <= 39, "worst \(worst) bytes a block")
    }
}
