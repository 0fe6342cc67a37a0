import SwiftLeakCore
import SwiftLeakScanner
import Testing

@Suite("Classifier: Valgrind Memcheck semantics")
struct ClassifierTests {
    @Test("a lost tree: one definite root, every descendant indirect and charged to it")
    func lostTree() {
        // Block 4 is the root (highest address) of 4 -> {1, 3}, 1 -> {0, 2}; 5 is unrelated and lost.
        let s = Scenario(sizes: [16, 32, 48, 24, 40, 32])
        s.link(4, at: 0, to: 1)
        s.link(4, at: 8, to: 3)
        s.link(1, at: 0, to: 0)
        s.link(1, at: 16, to: 2)
        let r = s.scan()
        #expect(r.kinds == [.indirectlyLost, .indirectlyLost, .indirectlyLost, .indirectlyLost, .definitelyLost, .definitelyLost])
        #expect(r.indirectBytesCharged == [0, 0, 0, 0, 16 + 32 + 48 + 24, 0])
        #expect(r.leaderOf == [4, 4, 4, 4, -1, -1])
        #expect(r.parentOf == [1, 4, 1, 4, -1, -1])
    }

    @Test("a lost 2-cycle: the lowest address is definite")
    func lostTwoCycle() {
        let s = Scenario(sizes: [32, 48])
        s.link(0, to: 1)
        s.link(1, to: 0)
        let r = s.scan()
        #expect(r.kinds == [.definitelyLost, .indirectlyLost])
        #expect(r.indirectBytesCharged == [48, 0])
        #expect(r.leaderOf == [-1, 0])
    }

    @Test("a lost 3-cycle entered anywhere: the lowest address is definite")
    func lostThreeCycle() {
        // 2 -> 0 -> 1 -> 2, plus 3 -> 1 (3 is a separate lost block pointing into the cycle).
        let s = Scenario(sizes: [16, 24, 40, 16])
        s.link(2, to: 0)
        s.link(0, to: 1)
        s.link(1, to: 2)
        s.link(3, to: 1)
        let r = s.scan()
        #expect(r.kinds == [.definitelyLost, .indirectlyLost, .indirectlyLost, .definitelyLost])
        #expect(r.indirectBytesCharged == [64, 0, 0, 0])
        #expect(r.leaderOf == [-1, 0, 0, -1])
    }

    @Test("a later leader absorbs an earlier clique with its indirect bytes (Valgrind's clique merge)")
    func cliqueMerge() {
        // 0 -> 1 is a clique led by 0; 2 -> 0 later makes 2 the leader of all three.
        let s = Scenario(sizes: [16, 32, 48])
        s.link(0, to: 1)
        s.link(2, to: 0)
        let r = s.scan()
        #expect(r.kinds == [.indirectlyLost, .indirectlyLost, .definitelyLost])
        #expect(r.indirectBytesCharged == [0, 0, 48])
        #expect(r.leaderOf == [2, 2, -1])
        #expect(r.parentOf == [2, 0, -1])
    }

    @Test("an interior pointer into a lost block makes it join the clique too")
    func cliqueThroughInteriorPointer() {
        let s = Scenario(sizes: [32, 64])
        s.link(0, to: 1, plus: 24)
        let r = s.scan()
        #expect(r.kinds == [.definitelyLost, .indirectlyLost])
        #expect(r.indirectBytesCharged == [64, 0])
    }

    @Test("a reachable cycle is still reachable")
    func reachableCycle() {
        let s = Scenario(count: 3)
        s.link(0, to: 1)
        s.link(1, to: 2)
        s.link(2, to: 0)
        s.root(5, s.address(1))
        let r = s.scan()
        #expect(r.kinds == [.stillReachable, .stillReachable, .stillReachable])
        // Nothing is lost: the clique arrays are empty, their accessors say "none".
        #expect(r.indirectBytesCharged.isEmpty && r.leaderOf.isEmpty && r.parentOf.isEmpty)
        #expect((0..<3).map { r.chargedBytes($0) } == [0, 0, 0])
        #expect((0..<3).map { r.leader($0) } == [-1, -1, -1])
        #expect((0..<3).map { r.parent($0) } == [-1, -1, -1])
    }

    @Test("a block with only an interior pointer to it is possibly lost")
    func interiorPointerOnly() {
        let s = Scenario(count: 2, size: 64)
        s.root(0, s.address(0) + 16)  // no heuristic applies at +16 with a zero first word
        s.root(1, s.address(1))
        let r = s.scan()
        #expect(r.kinds == [.possiblyLost, .stillReachable])
        #expect(r.heuristics == [nil, nil])
    }

    @Test("a block reached only through a possibly lost block is possibly lost")
    func throughPossiblyLost() {
        let s = Scenario(count: 3, size: 64)
        s.root(0, s.address(0) + 40)
        s.link(0, at: 16, to: 1)       // start pointer, but from a possibly lost block
        s.link(1, at: 16, to: 2, plus: 8)
        let r = s.scan()
        #expect(r.kinds == [.possiblyLost, .possiblyLost, .possiblyLost])
    }

    @Test("reachable beats possibly: a start pointer from a root upgrades and rescans")
    func reachableBeatsPossibly() {
        // The mark stack is LIFO: block 0 (found through an interior pointer) is scanned first as
        // possibly lost, making block 1 possibly lost; then block 2 is scanned, its start pointer
        // upgrades block 0, which is scanned again and upgrades block 1.
        let s = Scenario(count: 3, size: 64)
        s.root(0, s.address(2))
        s.root(1, s.address(0) + 40)
        s.link(0, at: 16, to: 1)
        s.link(2, at: 0, to: 0)
        let r = s.scan()
        #expect(r.kinds == [.stillReachable, .stillReachable, .stillReachable])
    }

    @Test("a register word is a root")
    func reachableViaRegister() {
        let s = Scenario(count: 2)
        s.link(0, to: 1)
        s.registers = [0, 42, s.address(0), 0xFFFF_FFFF_FFFF_FFFF]
        let r = s.scan()
        #expect(r.kinds == [.stillReachable, .stillReachable])
        #expect(r.statistics.registerWords == 4)
    }

    @Test("zero-size blocks: only a start pointer finds them, as Valgrind")
    func zeroSizeBlocks() {
        let s = Scenario(sizes: [0, 0, 0, 32])
        s.root(0, s.address(0))       // start pointer: reachable
        s.root(1, s.address(1) + 1)   // one past: points at nothing
        s.link(3, at: 8, to: 2)       // 3 is lost and points at 2
        let r = s.scan()
        #expect(r.kinds == [.stillReachable, .definitelyLost, .indirectlyLost, .definitelyLost])
        #expect(r.indirectBytesCharged == [0, 0, 0, 0])
        #expect(r.leaderOf == [-1, -1, 3, -1])
    }

    @Test("words are taken at 8-byte alignment only")
    func alignment() {
        let s = Scenario(count: 1)
        // The block address stored at root offset 4: it spans two aligned words, neither of which is it.
        s.memory.store(bytes: withUnsafeBytes(of: s.address(0).littleEndian) { Array($0) }, at: Scenario.rootStart + 4)
        let r = s.scan()
        #expect(r.kinds == [.definitelyLost])
    }

    @Test("statistics count the words scanned")
    func statistics() {
        let s = Scenario(sizes: [32, 20])
        s.root(0, s.address(0))
        s.link(0, to: 1)
        let r = s.scan()
        // 512 root words + 4 words of block 0 + 2 whole words of the 20-byte block 1.
        #expect(r.statistics.wordsScanned == 512 + 4 + 2)
        #expect(r.statistics.bytesScanned == (512 + 4 + 2) * 8)
        #expect(r.statistics.rootBytes == 4096)
        #expect(r.statistics.bytesUnreadable == 0)
    }

    @Test("a block reached through its interior first and its start later is scanned once, as reachable")
    func possibleSetAside() {
        let s = Scenario(sizes: [32, 64, 16])
        s.root(0, s.address(0))          // block 0 reachable
        s.root(1, s.address(1) + 8)      // block 1 possibly lost from the roots…
        s.link(0, to: 1)                 // …and reachable through block 0's first word
        s.link(1, at: 16, to: 2, plus: 4)  // block 1 holds an interior pointer to block 2
        let r = s.scan(heuristics: .none)
        #expect(r.kinds == [.stillReachable, .stillReachable, .possiblyLost])
        // 512 root words + 4 (block 0) + 8 (block 1, once) + 2 (block 2): block 1 is not scanned
        // first as possibly lost and again once block 0 upgrades it.
        #expect(r.statistics.wordsScanned == 512 + 4 + 8 + 2)
    }

    @Test("unreadable root pages are skipped, the rest is scanned")
    func unreadableRoots() {
        let s = Scenario(count: 1)
        s.root(3, s.address(0))
        let r = LeakScanner.scan(
            blocks: s.blocks,
            roots: [RootRegion(start: Scenario.rootStart - 8192, end: Scenario.rootStart + 4096, label: "partly unmapped")],
            registerWords: [], memory: s.memory)
        #expect(r.kinds == [.stillReachable])
        #expect(r.statistics.bytesUnreadable == 8192)
    }
}
