@testable import SwiftLeakScanner
import SwiftLeakTestSupport
import Testing

/// `BlockIndex.lookup` against a binary search over the blocks, on layouts with many segments
/// and 1 MiB regions (the region hash), huge blocks (coarse granules), zero-size blocks and words
/// everywhere: inside, at, just past and between blocks, and far outside.
@Suite("Block index lookups")
struct BlockIndexTests {
    static func reference(_ blocks: [ScanBlock], _ word: UInt64) -> Int {
        var lo = 0
        var hi = blocks.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if blocks[mid].address <= word { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0 else { return -1 }
        let block = blocks[lo - 1]
        return word < block.address + max(block.size, 1) ? lo - 1 : -1
    }

    @Test("the same block as a binary search, for every kind of word", arguments: [1, 2, 3, 4, 5, 6, 7, 8])
    func modelCheck(seed: UInt64) {
        var rng = SplitMix(seed: seed)
        var blocks: [ScanBlock] = []
        var address: UInt64 = 0x5555_0000_0010
        let count = 500 + Int(rng.next() % 3000)
        for _ in 0..<count {
            let size: UInt64 = switch rng.next() % 100 {
            case 0: 1 << (20 + rng.next() % 6)         // up to 32 MiB: coarse granules
            case 1, 2: 0
            default: 1 + rng.next() % 600
            }
            blocks.append(ScanBlock(address: address, size: size))
            let gap: UInt64 = switch rng.next() % 50 {
            case 0: (1 + rng.next() % 64) << 20        // another region, another segment
            case 1: rng.next() % 4 == 0 ? 1 << 36 : 4096          // far: a sparse region hash
            case 2, 3: 16 * (1 + rng.next() % 400)
            default: 16
            }
            address = (address + max(size, 1) + gap + 15) & ~15
        }
        var words: [UInt64] = [0, 1, UInt64.max, blocks[0].address - 1, address, address + (1 << 30)]
        for block in blocks {
            let end = block.address + max(block.size, 1)
            words += [block.address, end - 1, end, block.address &- 1, block.address + rng.next() % max(block.size, 1)]
            words.append(end + rng.next() % (1 << 22))
        }
        for _ in 0..<20_000 {
            words.append(blocks[0].address + rng.next() % (address - blocks[0].address + (1 << 21)))
        }
        // The index reads the blocks in place: it is used only while they are lent.
        blocks.withUnsafeBufferPointer { buffer in
            let index = BlockIndex(buffer)
            var mismatches = 0
            for word in words where index.lookup(word) != Self.reference(blocks, word) { mismatches += 1 }
            #expect(mismatches == 0, "seed \(seed): \(mismatches) of \(words.count) lookups differ (\(index.segmentCount) segments)")
            #expect(index.segmentCount > 1)
        }
    }
}
